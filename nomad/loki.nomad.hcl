# Single-binary Loki for a small cluster: one allocation, chunks and index on
# local disk. fwd2loki finds it through the Nomad service "loki".
#
#   nomad job run nomad/loki.nomad.hcl
#
# Past one node's disk or ingest rate, run Loki in its scalable mode with object
# storage instead; fwd2loki only needs the push URL.

job "loki" {
  type        = "service"
  datacenters = ["*"]

  group "loki" {
    # The filesystem store and in-memory ring are single-instance only.
    count = 1

    network {
      port "http" {
        static = 3100
      }
    }

    # The data lives in the allocation's data dir. Sticky and migrating, so a
    # new version of the job reuses it instead of starting with empty storage.
    # For data that must outlive the allocation (node drained, job purged), use
    # a host volume: declare `host_volume "loki" { path = "/opt/loki" }` in the
    # client config (a directory owned by uid 10001, the user the Loki image
    # runs as), then uncomment the volume blocks below and replace
    # NOMAD_ALLOC_DIR/data/loki with /loki in the config.
    ephemeral_disk {
      sticky  = true
      migrate = true
      size    = 2048
    }

    # volume "loki" {
    #   type   = "host"
    #   source = "loki"
    # }

    restart {
      attempts = 3
      interval = "10m"
      delay    = "15s"
      mode     = "delay"
    }

    task "loki" {
      driver = "docker"

      # Time to close the write-ahead log and leave the ring before SIGKILL.
      kill_timeout = "30s"

      config {
        image = "grafana/loki:3.5.0"
        ports = ["http"]
        args  = ["-config.file=/local/loki.yaml"]

        # Loki's own logs stay out of Loki: if it is unhealthy, they are what
        # explains why.
        logging {
          type = "json-file"
          config {
            max-size = "10m"
            max-file = "3"
          }
        }
      }

      # volume_mount {
      #   volume      = "loki"
      #   destination = "/loki"
      # }

      template {
        destination = "local/loki.yaml"
        data        = <<-EOT
          auth_enabled: false

          server:
            http_listen_port: {{ env "NOMAD_PORT_http" }}
            grpc_listen_port: 9096
            log_level: info

          common:
            # Inside the container the allocation dir is mounted at NOMAD_ALLOC_DIR.
            path_prefix: {{ env "NOMAD_ALLOC_DIR" }}/data/loki
            instance_addr: 127.0.0.1
            replication_factor: 1
            ring:
              kvstore:
                store: inmemory
            storage:
              filesystem:
                chunks_directory: {{ env "NOMAD_ALLOC_DIR" }}/data/loki/chunks
                rules_directory: {{ env "NOMAD_ALLOC_DIR" }}/data/loki/rules

          schema_config:
            configs:
              - from: "2024-04-01"
                store: tsdb
                object_store: filesystem
                schema: v13
                index:
                  prefix: index_
                  period: 24h

          limits_config:
            allow_structured_metadata: true
            # Retention is applied by the compactor below.
            retention_period: 744h
            reject_old_samples: true
            reject_old_samples_max_age: 168h

          compactor:
            working_directory: {{ env "NOMAD_ALLOC_DIR" }}/data/loki/compactor
            retention_enabled: true
            delete_request_store: filesystem

          # No usage reports to the outside from a private logging stack.
          analytics:
            reporting_enabled: false
        EOT
      }

      service {
        name     = "loki"
        provider = "nomad"
        port     = "http"

        # /ready answers 200 only once the ingester has joined the ring, i.e.
        # when pushes are accepted; deployments wait for that.
        check {
          type     = "http"
          path     = "/ready"
          interval = "10s"
          timeout  = "2s"
        }
      }

      resources {
        cpu    = 500
        memory = 512
      }
    }
  }
}
