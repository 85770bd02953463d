package llama

// A narrow cgo binding to the Hugging Face tokenizers library, linked as the
// static libtokenizers.a that build.sh builds with cargo from the Rust source
// of the github.com/daulet/tokenizers module (its version is pinned in
// versions.env). Only the C API declared in that source's tokenizers.h is
// used: load from tokenizer.json bytes, encode (ids and byte offsets),
// decode, free. fungtrain binds it itself rather than importing the module's
// Go package, whose download helper pulls net/http into every program that
// tokenizes.
//
// The Rust library is built against the C++ runtime (esaxx) and libm/libdl;
// Darwin's C++ runtime is libc++, Linux's libstdc++.

/*
#cgo CFLAGS: -I${SRCDIR}/../third_party/tokenizers/src
#cgo LDFLAGS: -L${SRCDIR}/../third_party/tokenizers -ltokenizers
#cgo linux LDFLAGS: -ldl -lm -lstdc++
#cgo darwin LDFLAGS: -lc++
#include <stdlib.h>
#include "tokenizers.h"

// The binding is written against the C API of v1.22.1: this reference makes
// linking fail against a libtokenizers.a of any other version, so that a
// version bump in versions.env is a reminder to re-read tokenizers.h.
extern void tokenizers_version_1_22_1(void);
void (*fgt_tokenizers_abi_check)(void) = &tokenizers_version_1_22_1;
*/
import "C"

import (
	"errors"
	"unsafe"
)

// hfTokenizer owns one tokenizer object of the Rust library. Its methods
// are safe for concurrent use (the library's tokenizer is immutable once
// loaded), except close.
type hfTokenizer struct {
	ptr unsafe.Pointer
}

// newHFTokenizer loads a tokenizer from the bytes of a tokenizer.json.
// Special tokens written in the text are matched as special tokens.
func newHFTokenizer(config []byte) (*hfTokenizer, error) {
	if len(config) == 0 {
		return nil, errors.New("tokenizer.json is empty")
	}
	if uint64(len(config)) > 1<<32-1 {
		return nil, errors.New("tokenizer.json is larger than 4 GiB")
	}
	opts := C.struct_tokenizers_options{encode_special_tokens: false}
	var cerr *C.char
	ptr := C.tokenizers_from_bytes((*C.uint8_t)(unsafe.Pointer(&config[0])), C.uint32_t(len(config)), &opts, &cerr)
	if ptr == nil {
		msg := "the tokenizers library could not load it"
		if cerr != nil {
			msg = C.GoString(cerr)
			C.tokenizers_free_string(cerr)
		}
		return nil, errors.New(msg)
	}
	return &hfTokenizer{ptr: ptr}, nil
}

// close frees the tokenizer; h must not be used after.
func (h *hfTokenizer) close() {
	if h.ptr != nil {
		C.tokenizers_free_tokenizer(h.ptr)
		h.ptr = nil
	}
}

// encode tokenizes text, which must be valid UTF-8 without NUL bytes (the
// C API takes a NUL-terminated string; callers check). With addSpecial the
// post-processor adds its special tokens (such as a BOS). With withOffsets
// it also returns each token's [start, end) byte range in text.
func (h *hfTokenizer) encode(text string, addSpecial, withOffsets bool) ([]int32, [][2]int, error) {
	// A NUL-terminated copy in Go memory: cgo may pass it since it holds no
	// Go pointers, and the library only reads it during the call.
	cstr := make([]byte, len(text)+1)
	copy(cstr, text)
	opts := C.struct_tokenizers_encode_options{
		add_special_token: C.bool(addSpecial),
		return_offsets:    C.bool(withOffsets),
	}
	buf := C.tokenizers_encode(h.ptr, (*C.char)(unsafe.Pointer(&cstr[0])), &opts)
	defer C.tokenizers_free_buffer(buf)
	// A successful encoding always has a non-NULL ids pointer (Rust's empty
	// vector is a dangling, non-NULL pointer); NULL means the library failed.
	if buf.ids == nil {
		return nil, nil, errors.New("the tokenizers library failed to encode the text")
	}
	n := int(buf.len)
	ids := make([]int32, n)
	for i, id := range unsafe.Slice((*uint32)(unsafe.Pointer(buf.ids)), n) {
		ids[i] = int32(id)
	}
	if !withOffsets {
		return ids, nil, nil
	}
	if buf.offsets == nil && n > 0 {
		return nil, nil, errors.New("the tokenizers library returned no offsets")
	}
	offsets := make([][2]int, n)
	if n > 0 {
		flat := unsafe.Slice((*C.size_t)(unsafe.Pointer(buf.offsets)), 2*n)
		for i := range offsets {
			offsets[i] = [2]int{int(flat[2*i]), int(flat[2*i+1])}
		}
	}
	return ids, offsets, nil
}

// decode turns ids into text, special tokens included unless skipSpecial.
// ok is false when the library fails (for instance when the text would hold
// a NUL byte, which its C string cannot carry).
func (h *hfTokenizer) decode(ids []int32, skipSpecial bool) (text string, ok bool) {
	if len(ids) == 0 {
		return "", true
	}
	u := make([]uint32, len(ids))
	for i, id := range ids {
		u[i] = uint32(id)
	}
	res := C.tokenizers_decode(h.ptr, (*C.uint32_t)(unsafe.Pointer(&u[0])), C.uint32_t(len(u)), C.bool(skipSpecial))
	if res == nil {
		return "", false
	}
	defer C.tokenizers_free_string(res)
	return C.GoString(res), true
}
