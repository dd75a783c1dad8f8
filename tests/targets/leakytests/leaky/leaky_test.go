package leaky

import (
	"sync"
	"testing"
	"time"
)

func TestAdd(t *testing.T) {
	if 1+1 != 2 {
		t.Fatal("arithmetic")
	}
}

// Leaks 3 goroutines on a channel nobody closes (unless fixed).
func TestReceivers(t *testing.T) {
	ch := Receivers(3)
	if fixed {
		close(ch)
	}
}

// Leaks 5 goroutines in WaitGroup.Wait: Add(1) with no Done (unless fixed).
func TestWaitGroup(t *testing.T) {
	var wg sync.WaitGroup
	wg.Add(1)
	for i := 0; i < 5; i++ {
		go func() { wg.Wait() }() // leak:wg
	}
	if fixed {
		wg.Done()
	}
}

// A goroutine that outlives its test by 200ms, then exits: not a leak.
func TestShortLived(t *testing.T) {
	ch := make(chan int)
	go func() { <-ch }() // busy:short
	time.AfterFunc(200*time.Millisecond, func() { close(ch) })
}

func TestSubtests(t *testing.T) {
	for _, n := range []int{1, 2} {
		t.Run("clean", func(t *testing.T) {
			done := make(chan int)
			go func() { done <- n }()
			<-done
		})
	}
}

// Lasts long enough for the leaks above to be parked past the threshold at exit.
func TestSlow(t *testing.T) {
	time.Sleep(800 * time.Millisecond)
}
