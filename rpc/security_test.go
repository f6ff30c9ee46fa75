package rpc

import (
	"context"
	"crypto/tls"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/shoalgrid/shoal/internal/testutil"
)

func TestTokenAuth(t *testing.T) {
	checkGoroutines(t)
	_, addr := startServer(t, ServerConfig{Token: "s3cret"})
	ctx := context.Background()

	// Without the token every call but shoal.auth is refused.
	plain := dial(t, addr, ClientConfig{})
	for _, method := range []string{"add", "shoal.ping", "shoal.describe"} {
		if err := plain.Call(ctx, method, nil, 1, 2); !errors.Is(err, ErrUnauthorized) {
			t.Fatalf("%s without token: got %v, want Unauthorized", method, err)
		}
	}
	if err := plain.Call(ctx, "shoal.auth", nil, "s3cret"); err != nil {
		t.Fatalf("right token: %v", err)
	}
	var sum int
	if err := plain.Call(ctx, "add", &sum, 1, 2); err != nil || sum != 3 {
		t.Fatalf("add after auth = %d, %v", sum, err)
	}

	// Dial authenticates for the caller, and reports a wrong token.
	good := dial(t, addr, ClientConfig{Token: "s3cret"})
	if err := good.Call(ctx, "add", &sum, 2, 2); err != nil || sum != 4 {
		t.Fatalf("add with token = %d, %v", sum, err)
	}
	if _, err := Dial(ctx, addr, ClientConfig{Token: "nope", Logger: quietLogger(t)}); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("Dial with wrong token: %v", err)
	}

	// A wrong guess costs the connection.
	guesser := dial(t, addr, ClientConfig{})
	if err := guesser.Call(ctx, "shoal.auth", nil, "wrong"); !errors.Is(err, ErrUnauthorized) {
		t.Fatalf("wrong token: got %v", err)
	}
	<-guesser.Done()
	if err := guesser.Call(ctx, "shoal.auth", nil, "s3cret"); !errors.As(err, new(*ConnError)) {
		t.Fatalf("second guess on the same connection: %v", err)
	}
}

func TestTLS(t *testing.T) {
	checkGoroutines(t)
	pki := testutil.NewPKI(t)
	serverTLS, err := LoadServerTLS(pki.ServerCert, pki.ServerKey, "")
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, ServerConfig{TLS: serverTLS})
	clientTLS, err := LoadClientTLS(pki.CAFile, "", "")
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{TLS: clientTLS})
	var sum int
	if err := c.Call(context.Background(), "add", &sum, 5, 6); err != nil || sum != 11 {
		t.Fatalf("add over TLS = %d, %v", sum, err)
	}

	// A plain-TCP client gets nothing useful, and the server goes on.
	plain, err := Dial(context.Background(), addr, ClientConfig{Logger: quietLogger(t)})
	if err == nil {
		err = plain.Call(context.Background(), "add", nil, 1, 2)
		plain.Close()
	}
	if err == nil {
		t.Fatal("plain TCP call to a TLS server succeeded")
	}
	// A client that does not trust the server's CA is refused.
	if _, err := Dial(context.Background(), addr, ClientConfig{TLS: &tls.Config{}}); err == nil {
		t.Fatal("client without the CA trusted the server")
	}
	if err := c.Call(context.Background(), "add", &sum, 1, 1); err != nil {
		t.Fatalf("TLS server stopped serving: %v", err)
	}
}

func TestTLSClientCertificates(t *testing.T) {
	checkGoroutines(t)
	pki := testutil.NewPKI(t)
	serverTLS, err := LoadServerTLS(pki.ServerCert, pki.ServerKey, pki.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, ServerConfig{TLS: serverTLS})

	withCert, err := LoadClientTLS(pki.CAFile, pki.ClientCert, pki.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, addr, ClientConfig{TLS: withCert})
	if err := c.Call(context.Background(), "shoal.ping", nil); err != nil {
		t.Fatalf("client with certificate: %v", err)
	}

	without, _ := LoadClientTLS(pki.CAFile, "", "")
	noCert, err := Dial(context.Background(), addr, ClientConfig{TLS: without, Logger: quietLogger(t)})
	if err == nil {
		// TLS 1.3 reports the refused certificate on first use.
		err = noCert.Call(context.Background(), "shoal.ping", nil)
		noCert.Close()
	}
	if err == nil {
		t.Fatal("client without a certificate was served")
	}
}

func TestLoadTLSErrors(t *testing.T) {
	if _, err := LoadServerTLS("/nonexistent.crt", "/nonexistent.key", ""); err == nil {
		t.Error("missing key pair accepted")
	}
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not pem"), 0o600)
	if _, err := LoadClientTLS(empty, "", ""); err == nil {
		t.Error("CA file without certificates accepted")
	}
}
