package shoal_test

import (
	"context"
	"errors"
	"testing"

	"github.com/shoalgrid/shoal"
	"github.com/shoalgrid/shoal/rpc"
)

// TestDialKeepsTheTokenOffPlainTCPBeyondLoopback: the client sends its
// token in the clear only to loopback unless told it may.
func TestDialKeepsTheTokenOffPlainTCPBeyondLoopback(t *testing.T) {
	// The context has ended before Dial starts: whatever the client does,
	// no packet leaves for the documentation address below.
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	seeds := []string{"192.0.2.1:7373"}
	_, err := shoal.Dial(ended, shoal.Config{Seeds: seeds, Token: "s3cret"})
	if !errors.Is(err, rpc.ErrPlaintextToken) {
		t.Fatalf("Dial with a token over plain TCP beyond loopback: %v, want rpc.ErrPlaintextToken", err)
	}
	_, err = shoal.Dial(ended, shoal.Config{Seeds: seeds, Token: "s3cret", AllowPlaintextToken: true})
	if err == nil || errors.Is(err, rpc.ErrPlaintextToken) {
		t.Fatalf("Dial allowed to send the token in the clear: %v, want the ended context's error", err)
	}
}
