/* umdq.c: error code names. */
#include "umdq.h"

const char *umdq_strerror(int code) {
    switch (code) {
    case UMDQ_OK: return "ok";
    case UMDQ_EINVAL: return "invalid input";
    case UMDQ_ENOMEM: return "out of memory";
    case UMDQ_EIO: return "I/O error";
    case UMDQ_ENOTFOUND: return "not found";
    case UMDQ_ESTATE: return "wrong state";
    case UMDQ_EPROTO: return "protocol error";
    case UMDQ_ESTALE: return "stale lease";
    case UMDQ_EBUSY: return "busy";
    case UMDQ_EUNSUPPORTED: return "not supported";
    case UMDQ_EDEVICE: return "device error";
    case UMDQ_ECANCELLED: return "cancelled";
    case UMDQ_EFORMAT: return "bad file format";
    default: return "unknown error";
    }
}
