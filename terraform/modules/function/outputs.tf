output "name" {
  description = "Name of the deployment."
  value       = google_cloudfunctions2_function.this.name
}

output "url" {
  description = "HTTPS URL of the function."
  value       = google_cloudfunctions2_function.this.url
}

output "service_uri" {
  description = "URI of the function's Cloud Run service (push endpoint and OIDC audience)."
  value       = google_cloudfunctions2_function.this.service_config[0].uri
}

output "source_object" {
  description = "gs:// URL of the deployed source archive."
  value       = "gs://${var.source_bucket}/${google_storage_bucket_object.source.name}"
}
