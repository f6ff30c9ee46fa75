package main

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

// secretFlags are the flags whose value is a secret: on the command line
// it is shown to every user of the machine by ps and /proc, so each has a
// file form and a warning.
var secretFlags = map[string]string{"token": "--token-file", "gossip-key": "--gossip-key-file"}

// secretsOnCommandLine names the secret flags given on cmd's command line
// (not from the environment); call it before flagsFromEnv.
func secretsOnCommandLine(cmd *cobra.Command) []string {
	var given []string
	for name := range secretFlags {
		if f := cmd.Flags().Lookup(name); f != nil && f.Changed {
			given = append(given, name)
		}
	}
	return given
}

// warnSecretsOnCommandLine says, for each secret flag given on the command
// line, how to keep it out of sight. It is quiet when the log settings are
// bad: the command reports those itself.
func warnSecretsOnCommandLine(g *globalOptions, names []string) {
	log, err := g.logger()
	if err != nil {
		return
	}
	for _, name := range names {
		env := envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		log.Warn(fmt.Sprintf("--%s on the command line can be read by every user of this machine (ps, /proc); "+
			"give %s FILE or set %s instead", name, secretFlags[name], env))
	}
}

// readSecretFile reads a file holding a secret, without its surrounding
// whitespace, and warns when others than its owner may read it.
func readSecretFile(flag, path string, log *slog.Logger) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", flag, err)
	}
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn(fmt.Sprintf("%s %s can be read by others than its owner (mode %v); chmod 600 it", flag, path, fi.Mode().Perm()))
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("%s %s is empty", flag, path)
	}
	return b, nil
}

// secretFromFlags returns the secret given by value (--NAME, or its
// environment variable) or read from file (--NAME-file), refusing both.
func secretFromFlags(name, value, file string, log *slog.Logger) (string, error) {
	if file == "" {
		return value, nil
	}
	if value != "" {
		env := envPrefix + strings.ToUpper(strings.ReplaceAll(name, "-", "_"))
		return "", fmt.Errorf("--%s (or %s) and %s both given: give the secret one way", name, env, secretFlags[name])
	}
	b, err := readSecretFile(secretFlags[name], file, log)
	return string(b), err
}

// parseGossipKeys reads base64 gossip keys, one a line; blank lines and
// lines starting with # are skipped. The first key is the one the node
// encrypts with; the others are accepted too, for changing keys.
func parseGossipKeys(source string, text []byte) (primary []byte, others [][]byte, err error) {
	sc := bufio.NewScanner(bytes.NewReader(text))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		key, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%s line %d is not a base64 key: %w", source, line, err)
		}
		if n := len(key); n != 16 && n != 24 && n != 32 {
			return nil, nil, fmt.Errorf("%s line %d: a key of %d bytes; it must be 16, 24 or 32", source, line, n)
		}
		if primary == nil {
			primary = key
		} else {
			others = append(others, key)
		}
	}
	if primary == nil {
		return nil, nil, fmt.Errorf("%s holds no key", source)
	}
	return primary, others, sc.Err()
}
