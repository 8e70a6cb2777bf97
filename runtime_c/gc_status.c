/* graphc runtime: human-readable status codes. */
#include "graphc_rt.h"

const char *gc_status_string(int status)
{
    switch (status) {
    case GC_OK:
        return "success";
    case GC_ERR_INVALID_ARGUMENT:
        return "invalid argument (null pointer, bad dimension or out-of-range dynamic size)";
    case GC_ERR_IO:
        return "the weights file is missing or cannot be read";
    case GC_ERR_FORMAT:
        return "the weights file is corrupt or truncated";
    case GC_ERR_MISMATCH:
        return "the weights belong to another model (name, dtype, shape or fingerprint differ)";
    case GC_ERR_OUT_OF_MEMORY:
        return "out of memory";
    case GC_ERR_INDEX:
        return "an index tensor holds a value out of range";
    case GC_ERR_INTERNAL:
        return "internal error in the graphc runtime";
    case GC_ERR_DEVICE:
        return "no usable device: no GPU, a call to the GPU runtime failed, or the CPU lacks the library's instruction sets";
    default:
        return "unknown error";
    }
}
