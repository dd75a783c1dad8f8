// Command hello is the smallest program with the shapes gotrace's binary readers must handle:
// inlined calls (two levels deep), a method, closures and a go statement. It imports net so that
// CGO_ENABLED=1 builds link runtime/cgo (external linking, C start-up code before Go text).
// Tests find lines by the MARK comments, so keep each marker on the line it names.
package main

import (
	"fmt"
	"net"
	"os"
	"sync"
)

type counter struct {
	mu sync.Mutex
	n  int
}

// scale is inlined into add, which is inlined into work: three frames at one PC.
func scale(d int) int {
	return d*3 + 1 // MARK:scale-body
}

func (c *counter) add(d int) int {
	c.n += scale(d) // MARK:add-calls-scale
	return c.n
}

//go:noinline
func work(c *counter, k int) int {
	total := 0
	for i := 0; i < k; i++ {
		total += c.add(i) // MARK:work-calls-add
	}
	return total
}

// spawn starts goroutines from a closure, so the binary has gowrap/func1 names.
func spawn(c *counter, n int) int {
	var wg sync.WaitGroup
	results := make(chan int, n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(k int) { // MARK:go-stmt
			defer wg.Done()
			c.mu.Lock()
			defer c.mu.Unlock()
			results <- work(c, k)
		}(i)
	}
	wg.Wait()
	close(results)
	sum := 0
	for r := range results {
		sum += r
	}
	return sum
}

func main() {
	n := 4
	if len(os.Args) > 1 {
		n = len(os.Args[1])
	}
	fmt.Println(net.JoinHostPort("hello", fmt.Sprint(spawn(&counter{}, n))))
}
