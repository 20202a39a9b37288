# sluice quickstart: an HTTP load balancer on port 8080 in front of
# two servers that are listen sections of this same file, each answering
# with its own body.
#   make run                     then, in another terminal:
#   curl localhost:8080          twice: each answer names the server.

global {
  maxconn         = 1000
  hard_stop_after = "10s"
}

defaults {
  mode    = "http"
  log     = "global" # one httplog line per request, on stderr
  retries = 2
  timeout {
    connect      = "2s"
    client       = "30s"
    server       = "30s"
    http_request = "10s"
  }
}

frontend "quickstart" {
  bind            = [":8080"]
  forward_for     = true
  default_backend = "demo"
}

backend "demo" {
  balance = "roundrobin"
  check {
    interval = "2s"
    http { path = "/" }
  }
  server "one" { address = "127.0.0.1:9001" }
  server "two" { address = "127.0.0.1:9002" }
}

# The two demo servers: sluice answers for them itself.
listen "server_one" {
  bind = ["127.0.0.1:9001"]
  log  = "none"
  http_request "return" {
    content_type = "text/plain"
    body         = "Hello from server one\n"
  }
}

listen "server_two" {
  bind = ["127.0.0.1:9002"]
  log  = "none"
  http_request "return" {
    content_type = "text/plain"
    body         = "Hello from server two\n"
  }
}
