"""Optional native kernels (built on first use where a C++ compiler is present)."""
