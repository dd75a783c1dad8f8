//go:build failing

package leaky

import "testing"

func TestFails(t *testing.T) {
	t.Fatal("this test fails on purpose (-tags failing)")
}
