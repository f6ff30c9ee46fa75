// Package deploy holds no code: its tests check the Kubernetes manifests
// in deploy/kubernetes against each other and against the flags of
// `shoal node`. It is a module of its own so that the Kubernetes API
// packages it decodes the manifests with never become dependencies of
// Shoal itself.
package deploy
