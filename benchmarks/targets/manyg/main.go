// Command manyg parks a large number of goroutines, for benchmarking goroutine dumps.
//
// It starts -n goroutines spread over five go statements (channel receive, mutex, select,
// WaitGroup wait, and a channel receive under a 10-frame recursion), waits until all of them
// are parked, prints "ready n=<goroutines>", then for every line "stack" read on stdin times
// its own runtime.Stack(buf, true) and prints "stack bytes=<n> ns=<elapsed>", the baseline a
// dump taken from outside is compared with. Other lines are ignored; EOF ends the program.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"runtime"
	"sync"
	"time"
)

func deep(n int, c chan int) {
	if n == 0 {
		<-c
		return
	}
	deep(n-1, c)
}

func main() {
	n := flag.Int("n", 100000, "goroutines to park")
	flag.Parse()

	never := make(chan int)
	var mu sync.Mutex
	mu.Lock()
	var wg sync.WaitGroup
	wg.Add(1)
	for i := 0; i < *n; i++ {
		switch i % 5 {
		case 0:
			go func() { <-never }()
		case 1:
			go func() { mu.Lock() }()
		case 2:
			go func() {
				select {
				case <-never:
				case <-never:
				}
			}()
		case 3:
			go func() { wg.Wait() }()
		default:
			go deep(10, never)
		}
	}
	for runtime.NumGoroutine() < *n+1 {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(500 * time.Millisecond) // let the last ones park
	fmt.Printf("ready n=%d\n", runtime.NumGoroutine())

	buf := make([]byte, 64<<20)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		if in.Text() != "stack" {
			continue
		}
		for {
			start := time.Now()
			k := runtime.Stack(buf, true)
			took := time.Since(start)
			if k < len(buf) {
				fmt.Printf("stack bytes=%d ns=%d\n", k, took.Nanoseconds())
				break
			}
			buf = make([]byte, 2*len(buf))
		}
	}
}
