"""NVML outcomes as our own exceptions, so that everything above the adapter (and its fake)
is independent of pynvml."""


class NvmlError(Exception):
    """An NVML call failed for a reason not listed below."""


class NvmlNotSupported(NvmlError):
    """NVML_ERROR_NOT_SUPPORTED (or a function this driver lacks): remember it, stop asking."""


class NvmlGpuLost(NvmlError):
    """NVML_ERROR_GPU_IS_LOST: the GPU fell off the bus or stopped answering."""


class NvmlNoPermission(NvmlError):
    """NVML_ERROR_NO_PERMISSION: needs root or a capability."""


class NvmlNotFound(NvmlError):
    """NVML_ERROR_NOT_FOUND: e.g. no new process-utilization samples, an empty MIG slot."""


class NvmlTimeout(NvmlError):
    """NVML_ERROR_TIMEOUT: an event wait ended with nothing; normal."""


class NvmlNotPresent(NvmlError):
    """No NVML library, no driver, or no pynvml: the node has no usable GPU stack."""


class NvmlNeedsReinit(NvmlError):
    """Uninitialized or library/driver version mismatch: the driver was reloaded under us."""
