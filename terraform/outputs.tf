output "function_urls" {
  description = "HTTPS URL of every function, by name (onboard, trigger, trigger_schedules, step_execute)."
  value       = { for name, function in module.function : name => function.url }
}

output "onboard_url" {
  description = "Base URL of the onboard API (admin, organizations, customers, integrations)."
  value       = module.function["onboard"].url
}

output "trigger_url" {
  description = "Base URL of the trigger API (pipelines, data, costs)."
  value       = module.function["trigger"].url
}

output "topics" {
  description = "Pub/Sub topic names: steps, schedules, dead_letter."
  value       = module.pubsub.topics
}

output "subscriptions" {
  description = "Pub/Sub subscription names by the topic they read: steps, schedules, dead_letter."
  value       = module.pubsub.subscriptions
}

output "kms_key_name" {
  description = "KMS_KEY_NAME of the functions."
  value       = module.kms.crypto_key_id
}

output "control_dataset" {
  description = "CONTROL_DATASET of the functions."
  value       = module.bigquery.control_dataset
}

output "service_accounts" {
  description = "Service account e-mail of every function, and of the push subscriptions (push)."
  value       = merge({ for name, account in google_service_account.function : name => account.email }, { push = google_service_account.push.email })
}

output "scheduler_jobs" {
  description = "Cloud Scheduler dispatcher job names by cadence (the dispatchers of configs/schedules.yml)."
  value       = module.scheduler.job_names
}

output "source_objects" {
  description = "gs:// URL of each function's source archive."
  value       = { for name, function in module.function : name => function.source_object }
}
