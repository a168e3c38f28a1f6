package mpage

import "unsafe"

func uintptrOf(m *Mapping) uintptr { return uintptr(unsafe.Pointer(m)) }
