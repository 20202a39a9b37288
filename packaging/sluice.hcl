# /etc/sluice/sluice.hcl: the configuration the package installs. It runs as
# it is: the runtime API socket, and the stats page and Prometheus metrics on
# loopback. Add frontends and backends here or as files in /etc/sluice/conf.d/
# (read in lexical order), check with `sluice check -f /etc/sluice/sluice.hcl
# -f /etc/sluice/conf.d`, apply with `systemctl reload sluice`.

global {
  hard_stop_after = "30m"
  admin_socket "/run/sluice/admin.sock" {
    mode  = "0660"
    level = "admin"
  }
}

defaults {
  mode = "tcp"
  log  = "global"
  timeout {
    connect = "5s"
    client  = "60s"
    server  = "60s"
  }
}

listen "stats" {
  mode = "http"
  bind = ["127.0.0.1:8404"]
  stats { uri = "/stats" }
  prometheus { uri = "/metrics" }
}
