// Command floor is the benchmark's floor: the standard library's httputil.ReverseProxy
// with a tuned transport, forwarding everything to the mock upstream. Whatever the proxy
// costs beyond this is the proxy's own overhead.
package main

import (
	"flag"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:18482", "listen address")
	upstream := flag.String("upstream", "http://127.0.0.1:18481", "upstream base URL")
	flag.Parse()
	target, err := url.Parse(*upstream)
	if err != nil {
		log.Fatalf("floor: %v", err)
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        1024,
		MaxIdleConnsPerHost: 512,
		IdleConnTimeout:     90 * time.Second,
		WriteBufferSize:     64 << 10,
		ReadBufferSize:      64 << 10,
	}
	rp := &httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target) },
		Transport: tr,
	}
	log.Printf("floor: listening on %s -> %s", *addr, target)
	log.Fatal(http.ListenAndServe(*addr, rp))
}
