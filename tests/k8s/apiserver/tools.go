//go:build tools

// Package tools pins the Kubernetes API server that `make test-k8s` builds from the Go module proxy
// (`go build k8s.io/kubernetes/cmd/kube-apiserver` in this folder); it is never compiled itself.
package tools

import _ "k8s.io/kubernetes/cmd/kube-apiserver"
