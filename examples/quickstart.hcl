# sluice quickstart: a TCP load balancer on 127.0.0.1:8080 in front of two
# demo servers (make run starts them on 127.0.0.1:9001 and :9002).
#   make run            then, in another terminal:
#   nc 127.0.0.1 8080   twice: each greeting names the server that answered.

global {
  maxconn         = 1000
  hard_stop_after = "10s"
}

defaults {
  mode    = "tcp"
  log     = "global"      # one tcplog line per connection, on stderr
  retries = 2
  timeout {
    connect = "2s"
    client  = "60s"
    server  = "60s"
  }
}

frontend "quickstart" {
  bind            = ["127.0.0.1:8080"]
  default_backend = "demo"
}

backend "demo" {
  balance    = "roundrobin"
  redispatch = true
  check {
    interval = "2s"
    rise     = 2
    fall     = 2
  }
  server "one" { address = "127.0.0.1:9001" }
  server "two" { address = "127.0.0.1:9002" }
}
