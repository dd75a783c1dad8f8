// Package leaky has tests that pass and leak goroutines, for `gotrace run -- go test ./...`
// (tests/integration/test_run.py). Build tags: `fixed` fixes both leaks, `failing` adds a
// failing test. Lines marked `// leak:NAME` are the go statements that leak.
package leaky

// Receivers starts n goroutines that each wait for one value on the returned channel; only
// closing it lets them all go.
func Receivers(n int) chan int {
	ch := make(chan int)
	for i := 0; i < n; i++ {
		go func() { <-ch }() // leak:recv
	}
	return ch
}
