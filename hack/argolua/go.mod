// Module argolua builds argocd-lua-health: Argo CD's Lua interpreter (gopher-lua) running our health checks.
module github.com/enclave-operator/enclave-operator/hack/argolua

go 1.26.0

godebug default=go1.26

require github.com/yuin/gopher-lua v1.1.1
