# An application whose stdout and stderr go to fwd2loki, and from there to
# Loki. Copy the logging block into your own jobs.
#
#   nomad job run nomad/example-app.nomad.hcl
#   curl http://<node>:<port>/   # each request writes a log line
#
# Nomad names every container "<task>-<alloc id>", so the record key
# container_name ("/web-0b5c…") changes with every allocation, i.e. with every
# deployment, reschedule or restart elsewhere. Stable names come from Docker
# labels instead. With this in each client's config
#
#   plugin "docker" {
#     config {
#       extra_labels = ["job_name", "task_group_name", "task_name", "namespace", "node_name"]
#     }
#   }
#
# Nomad puts com.hashicorp.nomad.job_name, com.hashicorp.nomad.task_name, ...
# on every container, and the `labels` log option below copies the listed ones
# into each record as string keys of the same name. fwd2loki's label_keys turns
# them into Loki labels, made valid on the way: com_hashicorp_nomad_job_name and
# com_hashicorp_nomad_task_name (nomad/fwd2loki.nomad.hcl lists both).

job "example-app" {
  type        = "service"
  datacenters = ["*"]

  group "web" {
    count = 1

    network {
      port "http" {
        to = 5678
      }
    }

    task "web" {
      driver = "docker"

      config {
        image = "hashicorp/http-echo:1.0"
        args  = ["-listen=:5678", "-text=hello from example-app"]
        ports = ["http"]

        logging {
          type = "fluentd"
          config {
            # dockerd, not the container, opens this connection, from the
            # host's network namespace: loopback reaches the fwd2loki that the
            # system job runs on every node.
            fluentd-address = "127.0.0.1:24224"
            # Start and keep running while fwd2loki restarts: lines wait in
            # dockerd's memory instead of blocking the app or failing its
            # start. The price: lines still queued when the container stops
            # are dropped. (Older posts say fluentd-async-connect; Docker 28
            # removed it and refuses to start a container that sets it.)
            fluentd-async = "true"
            # Nanosecond event times instead of whole seconds, so Loki keeps
            # the order of lines written within the same second.
            fluentd-sub-second-precision = "true"
            tag                          = "${NOMAD_JOB_NAME}.${NOMAD_TASK_NAME}"
            labels                       = "com.hashicorp.nomad.job_name,com.hashicorp.nomad.task_name"
          }
        }
      }

      service {
        name     = "example-app"
        provider = "nomad"
        port     = "http"

        check {
          type     = "http"
          path     = "/"
          interval = "10s"
          timeout  = "2s"
        }
      }

      resources {
        cpu    = 50
        memory = 32
      }
    }
  }
}
