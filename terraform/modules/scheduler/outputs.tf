output "job_names" {
  description = "Dispatcher job names by cadence."
  value       = { for name, job in google_cloud_scheduler_job.dispatcher : name => job.name }
}
