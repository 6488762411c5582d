/* umdq.h: what every part of umdq shares: version, error codes, exit codes. */
#ifndef UMDQ_H
#define UMDQ_H

#define UMDQ_VERSION "0.1.0"
#define UMDQ_PROTOCOL_VERSION 1

/* Functions return 0 or one of these (negative); a char *err, size_t errlen pair, when a function
 * takes one, receives a message a person can act on. */
enum {
    UMDQ_OK = 0,
    UMDQ_EINVAL = -1,      /* bad input: config, spec, message, argument */
    UMDQ_ENOMEM = -2,      /* out of host memory */
    UMDQ_EIO = -3,         /* file, socket or database I/O failed */
    UMDQ_ENOTFOUND = -4,   /* no such job, sweep, artifact, file */
    UMDQ_ESTATE = -5,      /* the operation does not apply in the current state */
    UMDQ_EPROTO = -6,      /* malformed protocol message */
    UMDQ_ESTALE = -7,      /* a lease token that is no longer current */
    UMDQ_EBUSY = -8,       /* resource in use (address taken, daemon already running) */
    UMDQ_EUNSUPPORTED = -9,/* not available in this build or on this machine */
    UMDQ_EDEVICE = -10,    /* accelerator fault or out of device memory */
    UMDQ_ECANCELLED = -11, /* stopped on request */
    UMDQ_EFORMAT = -12     /* a file with the wrong magic, version or a truncated body */
};

/* Short name of an error code ("invalid input", "not found", ...). Never NULL. */
const char *umdq_strerror(int code);

/* Process exit codes of the CLI (documented in umdq --help). */
enum {
    UMDQ_EXIT_OK = 0,
    UMDQ_EXIT_RUNTIME = 1,  /* daemon unreachable, I/O error, timeout */
    UMDQ_EXIT_USAGE = 2,    /* bad arguments or bad input file */
    UMDQ_EXIT_NOTFOUND = 3, /* no such job or sweep */
    UMDQ_EXIT_FAILED = 4    /* some jobs failed */
};

#endif
