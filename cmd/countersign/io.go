package main

import (
	"fmt"
	"io"
)

func readAllLimit(r io.Reader, limit int64) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r, limit))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) >= limit {
		return nil, fmt.Errorf("input larger than %d bytes", limit-1)
	}
	return b, nil
}
