//go:build !fixed

package leaky

const fixed = false
