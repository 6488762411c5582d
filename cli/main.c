/* main.c: the umdq executable; everything else lives in libumdqcli (cli.c). */
#include "cli.h"

int main(int argc, char **argv) {
    return cli_main(argc, argv);
}
