# One Cloud Scheduler dispatcher job per cadence (configs/schedules.yml), never one per tenant: each tick
# publishes one convergence.schedule/v1 message (common.bus.messages.ScheduleMessage) to the schedules
# topic, and trigger_schedules fans it out to the tenants.

resource "google_cloud_scheduler_job" "dispatcher" {
  for_each = var.schedules

  project     = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  description = "Starts ${each.value.template} for tenants ${jsonencode(each.value.tenants)} (configs/schedules.yml: ${each.key})"
  schedule    = each.value.cron
  time_zone   = each.value.time_zone

  retry_config {
    retry_count          = var.retry_count
    min_backoff_duration = "10s"
    max_backoff_duration = "300s"
  }

  pubsub_target {
    topic_name = var.topic_id
    data = base64encode(jsonencode({
      schema       = "convergence.schedule/v1"
      template     = each.value.template
      tenants      = each.value.tenants
      parameters   = each.value.parameters
      trigger_by   = "scheduler:${each.key}"
      trigger_type = "schedule"
    }))
    attributes = {
      template = each.value.template
    }
  }
}
