# fwd2loki on every client node: receives the Docker fluentd logging driver on
# 24224 and pushes to the Loki registered as the Nomad service "loki"
# (nomad/loki.nomad.hcl).
#
#   nomad job run nomad/fwd2loki.nomad.hcl
#
# The image is not pulled from a registry: build it once and load it on each
# node (see the README, "Running on Nomad").

job "fwd2loki" {
  # One allocation per client; the job name also grants the tasks read access to
  # the Nomad variable "nomad/jobs/fwd2loki" used for the Loki token below.
  type = "system"

  # Without this a system job only lands on the "default" node pool, and nodes
  # in other pools would log into a port nobody listens on.
  node_pool   = "all"
  datacenters = ["*"]

  # One node at a time, so a bad image or config costs one node's logs, not the
  # cluster's, and is rolled back.
  update {
    max_parallel     = 1
    min_healthy_time = "10s"
    healthy_deadline = "2m"
    auto_revert      = true
  }

  group "fwd2loki" {
    # Static ports on the host network: dockerd dials the fluentd address from
    # the host's network namespace, so app jobs can all say 127.0.0.1:24224.
    network {
      mode = "host"
      port "forward" {
        static = 24224
      }
      port "http" {
        static = 24231
      }
    }

    # Keep retrying instead of failing the allocation: a node without its
    # shipper makes every app on it block or drop log lines.
    restart {
      attempts = 10
      interval = "5m"
      delay    = "5s"
      mode     = "delay"
    }

    task "fwd2loki" {
      driver = "docker"

      # Must exceed shutdown_timeout in the config below, so the final flush to
      # Loki ends before Docker's SIGKILL.
      kill_timeout = "10s"

      config {
        # Built locally and loaded with `docker load`; a tag other than
        # "latest" lets Nomad use the local image instead of pulling.
        image        = "fwd2loki:0.1.0"
        network_mode = "host"
        ports        = ["forward", "http"]
        args         = ["--config", "/local/fwd2loki.toml"]

        # Never the fluentd driver here: the shipper would log to itself, and
        # its own errors would be lost exactly when it is failing. A logging
        # block without config replaces the Nomad plugin's rotated default with
        # Docker's unrotated json-file, hence the explicit rotation.
        logging {
          type = "json-file"
          config {
            max-size = "10m"
            max-file = "3"
          }
        }
      }

      env {
        # JSON so that fwd2loki's own logs are easy to query once something
        # else ships this json-file.
        FWD2LOKI_LOG_FORMAT = "json"
      }

      template {
        destination = "local/fwd2loki.toml"
        # The config is read once at start; a new Loki address needs a restart.
        change_mode = "restart"
        data        = <<-EOT
          # Rendered by Nomad from nomad/fwd2loki.nomad.hcl; edit the job, not this file.

          # Below the task's kill_timeout (10s), so delivery ends before SIGKILL.
          shutdown_timeout = "8s"

          [input]
          listen = ["0.0.0.0:{{ env "NOMAD_PORT_forward" }}"]

          [loki]
          {{- with nomadService "loki" }}{{ with index . 0 }}
          url = "http://{{ .Address }}:{{ .Port }}/loki/api/v1/push"
          {{- end }}{{ else }}
          # No "loki" service is registered: entries are printed to standard output
          # (nomad alloc logs) until one is, then this file changes and the task restarts.
          {{- end }}
          # For a Loki behind authentication; read again whenever the template below
          # rewrites it, and an empty file (no variable set) sends no token.
          bearer_token_file = "/secrets/loki-token"
          # The Nomad names stay the same across deployments; container_name is
          # "/<task>-<alloc id>", a new stream per allocation, so drop it on busy
          # clusters (README, "Running on Nomad").
          label_keys = [
            "com.hashicorp.nomad.job_name",
            "com.hashicorp.nomad.task_name",
            "container_name",
          ]

          [loki.labels]
          # The stream selector of the fluent-bit setup this replaces, so existing
          # Grafana queries keep working.
          job      = "fluent-bit"
          hostname = "{{ env "attr.unique.hostname" }}"

          # A disk buffer keeps what Loki has not taken yet across task restarts, in the
          # allocation's data dir (kept across job updates too with a group-level
          # ephemeral_disk { sticky = true }). max_bytes fits the default 300 MB disk.
          # [buffer]
          # type = "disk"
          # path = "{{ env "NOMAD_ALLOC_DIR" }}/data/buffer"
          # max_bytes = "256MiB"

          # /health, /ready and /metrics on all interfaces, not the loopback default:
          # Nomad's check and Prometheus reach them at the node's address.
          [server]
          listen = "0.0.0.0:{{ env "NOMAD_PORT_http" }}"
        EOT
      }

      # The Loki token, for a Loki behind authentication. Set it with
      #   nomad var put nomad/jobs/fwd2loki loki_token=...
      # Renders an empty file while the variable does not exist, instead of
      # blocking the task.
      template {
        destination = "secrets/loki-token"
        # fwd2loki re-reads the file, so a rotated token needs no restart.
        change_mode = "noop"
        # The image runs as nobody (65534); the token is for its eyes only.
        uid   = 65534
        gid   = 65534
        perms = "0400"
        data  = <<-EOT
          {{- if nomadVarExists "nomad/jobs/fwd2loki" -}}
          {{- with nomadVar "nomad/jobs/fwd2loki" }}{{ .loki_token }}{{ end -}}
          {{- end -}}
        EOT
      }

      # Vault instead of Nomad variables (workload identity, Nomad 1.7+): short-lived
      # tokens are re-rendered before they expire and picked up without a restart.
      # Replace the template above with:
      #
      #   vault {}
      #
      #   template {
      #     destination = "secrets/loki-token"
      #     change_mode = "noop"
      #     uid         = 65534
      #     gid         = 65534
      #     perms       = "0400"
      #     data        = <<-EOT
      #       {{- with secret "secret/data/fwd2loki" }}{{ .Data.data.loki_token }}{{ end -}}
      #     EOT
      #   }

      # Prometheus' nomad_sd_configs finds /metrics through this registration.
      service {
        name     = "fwd2loki"
        provider = "nomad"
        port     = "http"

        check {
          type     = "http"
          path     = "/health"
          interval = "10s"
          timeout  = "2s"
        }
      }

      resources {
        cpu = 100
        # Sized for the default 32 MiB buffer ([buffer] max_bytes): fwd2loki stays
        # under 64 MiB resident with the buffer full (Loki down), so `memory`, the
        # hard limit without memory oversubscription, has room to spare.
        # memory_max only applies when oversubscription is enabled
        # (nomad operator scheduler set-config -memory-oversubscription=true).
        # Raise both by about the increase when you raise [buffer] max_bytes.
        memory     = 96
        memory_max = 128
      }
    }
  }
}
