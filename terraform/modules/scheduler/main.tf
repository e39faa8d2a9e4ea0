# One Cloud Scheduler dispatcher job per cadence (the `dispatchers:` of configs/schedules.yml), never one
# per schedule or per tenant (1,000 jobs per region): each tick publishes one convergence.dispatch/v1
# message (common.bus.messages.DispatchMessage) to the schedules topic, and trigger_schedules works out
# which platform and tenant schedules are due (common.services.dispatcher.dispatch_due) and fans them out.

resource "google_cloud_scheduler_job" "dispatcher" {
  for_each = var.dispatchers

  project     = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-dispatch-${each.key}"
  description = coalesce(each.value.description, "Dispatcher ${each.key}: starts the schedules that are due (configs/schedules.yml)")
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
      schema  = "convergence.dispatch/v1"
      cadence = each.key
    }))
    attributes = {
      cadence = each.key
    }
  }
}
