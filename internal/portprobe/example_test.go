package portprobe_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/shoalgrid/shoal/internal/portprobe"
)

// A seed that turns out to be an HTTP server, as a node's --http-addr would.
func ExampleIdentify() {
	srv := httptest.NewServer(http.NotFoundHandler())
	defer srv.Close()

	fmt.Println(portprobe.Identify(context.Background(), srv.Listener.Addr().String()))
	// Output: HTTP
}
