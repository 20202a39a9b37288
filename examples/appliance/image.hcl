# The sluice appliance: a kernel, sluice-init as PID 1 and sluice serving
# examples/quickstart.hcl on port 8080. No distribution, no shell.
#   make image      builds it into dist/appliance/ (see README.md)

config   = "../quickstart.hcl"
binaries = "../../bin" # bin/linux-ARCH/{sluice,sluice-init}, built by make image
arch     = "amd64"
hostname = "sluice"

# No kernel block: make image takes vmlinuz and its modules from Debian's
# current linux-image-amd64 package. To pin one:
#   kernel { deb = "linux-image-6.1.0-56-amd64_6.1.192-2_amd64.deb" }

# No network block: DHCP on every ethernet interface. A static one:
#   network "eth0" {
#     address = "192.0.2.10/24"
#     gateway = "192.0.2.1"
#     dns     = ["192.0.2.53"]
#   }

# The connection tuning a busy balancer wants.
sysctl = {
  "net.core.somaxconn"                = "4096"
  "net.ipv4.tcp_max_syn_backlog"      = "4096"
  "net.ipv4.ip_local_port_range"      = "1024 65023"
  "net.ipv4.tcp_tw_reuse"             = "1"
}

# The runtime API on TCP, for pushing a new configuration and reloading:
#   bin/sluice ctl -s tcp://HOST:9999 set config '<<' < new.hcl
#   bin/sluice ctl -s tcp://HOST:9999 reload
# Anyone who reaches this port administers the appliance: expose it on a
# management network only.
admin {
  address = "0.0.0.0:9999"
  level   = "admin"
}

cmdline = "console=ttyS0 panic=-1"
outputs = ["oci", "initramfs", "disk"]

oci {
  platforms = ["amd64", "arm64"]
  tag       = "sluice:latest"
}

disk {
  size = "96m"
  data = "16m"
}
