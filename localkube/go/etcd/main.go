// Command etcd is the etcd server built from the published go.etcd.io/etcd/server/v3
// module. The upstream etcd main lives in a module with replace directives, which
// `go install module@version` refuses, so localkube pins its own one-line main.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
