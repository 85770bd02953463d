package main

/*
#cgo LDFLAGS: -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

// sgemm_library names the shared library whose cblas_sgemm the process
// uses: the global lookup that libmlx's own reference goes through.
static const char* sgemm_library(void) {
	void* f = dlsym(RTLD_DEFAULT, "cblas_sgemm");
	Dl_info info;
	if (f == NULL || dladdr(f, &info) == 0) {
		return NULL;
	}
	return info.dli_fname;
}
*/
import "C"

// sgemmLibrary is the path of the library that provides cblas_sgemm to
// MLX, or "" when no library does (a GPU build may not need one).
func sgemmLibrary() string {
	p := C.sgemm_library()
	if p == nil {
		return ""
	}
	return C.GoString(p)
}
