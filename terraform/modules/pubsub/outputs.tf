output "topics" {
  description = "Topic names by role: steps, schedules, dead_letter."
  value = {
    steps       = google_pubsub_topic.steps.name
    schedules   = google_pubsub_topic.schedules.name
    dead_letter = google_pubsub_topic.dead_letter.name
  }
}

output "schedules_topic_id" {
  description = "projects/P/topics/T of the schedules topic (the Cloud Scheduler target)."
  value       = google_pubsub_topic.schedules.id
}

output "subscriptions" {
  description = "Subscription names by the topic role they read."
  value = {
    steps       = google_pubsub_subscription.steps_push.name
    schedules   = google_pubsub_subscription.schedules_push.name
    dead_letter = google_pubsub_subscription.dead_letter_push.name
  }
}
