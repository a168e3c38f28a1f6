package mpage

import "unsafe"

func pageAddr(p *Page) uintptr { return uintptr(unsafe.Pointer(p)) }
