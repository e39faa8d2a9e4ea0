# One Cloud Functions (gen2) deployment of a staged source folder (build/<source>/, written by
# `convergence stage`), its source archive named by content hash, its secrets and who may invoke it.

data "archive_file" "source" {
  type        = "zip"
  source_dir  = var.source_dir
  output_path = "${var.archive_dir}/${var.name}.zip"
}

resource "google_storage_bucket_object" "source" {
  # A new name for new content: a code change replaces the object and so redeploys the function.
  name   = "${var.name}-${data.archive_file.source.output_md5}.zip"
  bucket = var.source_bucket
  source = data.archive_file.source.output_path
}

resource "google_cloudfunctions2_function" "this" {
  # checkov:skip=CKV_GCP_124: ingress is chosen per deployment: ALLOW_ALL only for the public HTTPS API (onboard, trigger; every route but /health, /openapi.json and /docs (off in production) checks X-CA-Root-Key or X-API-Key), ALLOW_INTERNAL_ONLY for the push targets (tests/terraform checks); the check cannot see the value through the module
  project     = var.project_id
  location    = var.region
  name        = var.name
  description = var.description
  labels      = var.labels

  build_config {
    runtime     = var.runtime
    entry_point = var.entry_point
    # The decorator (@functions_framework.http / .cloud_event) already fixes the signature at run time;
    # this tells the buildpack the same, since a deployment without event_trigger defaults to http.
    environment_variables = {
      GOOGLE_FUNCTION_SIGNATURE_TYPE = var.signature_type
    }

    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    service_account_email            = var.service_account_email
    available_memory                 = var.available_memory
    available_cpu                    = var.available_cpu
    timeout_seconds                  = var.timeout_seconds
    min_instance_count               = var.min_instance_count
    max_instance_count               = var.max_instance_count
    max_instance_request_concurrency = var.max_instance_request_concurrency
    ingress_settings                 = var.ingress_settings
    all_traffic_on_latest_revision   = true
    environment_variables            = var.environment

    dynamic "secret_environment_variables" {
      for_each = var.secret_environment

      content {
        key        = secret_environment_variables.key
        project_id = var.project_id
        secret     = secret_environment_variables.value.secret
        version    = secret_environment_variables.value.version
      }
    }
  }

  depends_on = [google_secret_manager_secret_iam_member.accessor]
}

resource "google_secret_manager_secret_iam_member" "accessor" {
  for_each = var.secret_environment

  project   = var.project_id
  secret_id = each.value.secret
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${var.service_account_email}"
}

# A gen2 function is served by the Cloud Run service of the same name: invoking it is run.invoker there.
# The HTTPS API functions are public by design (CONTRACT section 2: the API checks its own keys); push
# targets admit only the push service account.
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  for_each = var.invoker_members

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this.name
  role     = "roles/run.invoker"
  member   = each.value
}
