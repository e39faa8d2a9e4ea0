# Convergence in Google Cloud (gcp mode, docs/modes.md): Cloud KMS, Pub/Sub with a dead-letter topic,
# Cloud Functions gen2, Cloud Scheduler dispatchers, the control dataset, one service account per
# function and least-privilege IAM. Decisions and real-project checks: README.md beside this file.

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_project" "this" {
  project_id = var.project_id
}

locals {
  build_dir = "${path.module}/../build"
  schedules = yamldecode(file("${path.module}/../configs/schedules.yml"))

  # The longest a step may run (common/templates/models.py StepSpec.timeout_seconds, le=540): the
  # step_execute timeout, and at most the ack deadline so a running step is not redelivered.
  step_timeout_seconds = 540

  # Claims (common/claims/gcs.py): what must happen once across instances is a conditional object write here.
  claims_bucket = "${var.project_id}-${var.name_prefix}-claims"

  required_services = toset([
    "artifactregistry.googleapis.com",
    "bigquery.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "storage.googleapis.com",
  ])

  # What every function reads through common.settings.Settings (names are its fields, upper-cased).
  runtime_environment = {
    CONVERGENCE_HOME      = "/tmp/convergence"
    CONVERGENCE_WAREHOUSE = "bigquery"
    CONVERGENCE_BUS       = "pubsub"
    CONVERGENCE_KEYRING   = "gcp-kms"
    CONVERGENCE_CLAIMS    = "gcs"
    CLAIMS_BUCKET         = local.claims_bucket
    GCP_PROJECT_ID        = var.project_id
    BIGQUERY_LOCATION     = var.bigquery_location
    KMS_KEY_NAME          = module.kms.crypto_key_id
    CONTROL_DATASET       = var.control_dataset
    STEPS_TOPIC           = var.steps_topic
    SCHEDULES_TOPIC       = var.schedules_topic
    DEAD_LETTER_TOPIC     = var.dead_letter_topic
    STEP_MAX_ATTEMPTS     = tostring(var.step_max_attempts)
  }

  # notify.email steps (run by step_execute, and by onboard for the dry-run pipeline).
  notify_environment = var.smtp == null ? {} : {
    SMTP_HOST     = var.smtp.host
    SMTP_PORT     = tostring(var.smtp.port)
    SMTP_USERNAME = var.smtp.username
    SMTP_FROM     = var.smtp.from
    SMTP_STARTTLS = tostring(var.smtp.starttls)
  }
  notify_secrets = try(var.smtp.password_secret, null) == null ? {} : {
    SMTP_PASSWORD = { secret = var.smtp.password_secret, version = "latest" }
  }

  # Admin routes (root key) are served by onboard only (common/api/routes.py).
  root_key_secrets = {
    CA_ROOT_API_KEY = { secret = var.root_api_key_secret, version = var.root_api_key_secret_version }
  }

  # Three staged sources (build/<source>/), four deployments: trigger_schedules is the trigger source's
  # CloudEvent entry point deployed on its own, as `convergence local up` runs it (convergence/local_stack.py).
  # Kept free of resource references: the service accounts are made for each of these keys.
  functions = {
    onboard = {
      source          = "onboard"
      entry_point     = "onboard"
      signature_type  = "http"
      description     = "HTTPS: bootstrap, dry-run, onboarding, API keys, integrations"
      timeout_seconds = 300
    }
    trigger = {
      source          = "trigger"
      entry_point     = "trigger"
      signature_type  = "http"
      description     = "HTTPS: pipeline runs and status, data uploads and reads, cost summaries"
      timeout_seconds = 300
    }
    trigger_schedules = {
      source          = "trigger"
      entry_point     = "trigger_schedules"
      signature_type  = "cloudevent"
      description     = "Pub/Sub push: scheduled and bulk runs, fanned out to tenants"
      timeout_seconds = local.step_timeout_seconds
    }
    step_execute = {
      source          = "step_execute"
      entry_point     = "step_execute"
      signature_type  = "cloudevent"
      description     = "Pub/Sub push: execute one step, publish the next; close dead-lettered steps"
      timeout_seconds = local.step_timeout_seconds
    }
  }

  function_environment = {
    onboard           = merge(local.runtime_environment, local.notify_environment)
    trigger           = local.runtime_environment
    trigger_schedules = local.runtime_environment
    step_execute      = merge(local.runtime_environment, local.notify_environment)
  }

  function_secrets = {
    onboard           = merge(local.root_key_secrets, local.notify_secrets)
    trigger           = {}
    trigger_schedules = {}
    step_execute      = local.notify_secrets
  }

  # The HTTPS API is public (every route but /health, /openapi.json and /docs (off in production) checks a key); push targets accept
  # only the push subscriptions' service account, from inside Google Cloud.
  function_invokers = {
    onboard           = var.http_invoker_members
    trigger           = var.http_invoker_members
    trigger_schedules = { push = "serviceAccount:${google_service_account.push.email}" }
    step_execute      = { push = "serviceAccount:${google_service_account.push.email}" }
  }

  function_ingress = {
    onboard           = "ALLOW_ALL"
    trigger           = "ALLOW_ALL"
    trigger_schedules = var.push_target_ingress_settings
    step_execute      = var.push_target_ingress_settings
  }

  # Who calls what. Cloud KMS (common/crypto/tenant_keys.py through gcp_kms.py): onboard wraps a new
  # tenant's keyset (Encrypt) and unwraps an existing one to encrypt API-key copies and integration
  # credentials (Decrypt). The source loaders of step_execute decrypt a tenant's integration credential
  # inside the step that needs it (integrations.read_integration), so step_execute is a decrypter too:
  # tests/terraform checks this against the code.
  kms_encrypters = ["onboard"]
  kms_decrypters = ["onboard", "step_execute"]
  # Step messages are published when a run starts (trigger, trigger_schedules) and after each step.
  steps_publishers = ["trigger", "trigger_schedules", "step_execute"]
  # Schedules topic: onboard publishes bulk runs (POST /api/v1/admin/runs/bulk); trigger_schedules publishes
  # the due slots of a dispatcher tick, the chunks of a fan-out and the tenants a chunk hands on.
  schedules_publishers = ["onboard", "trigger_schedules"]
  # BigQuery: onboard creates tenant datasets; the others read and write tables of existing datasets.
  dataset_creators    = ["onboard"]
  tenant_data_members = ["trigger", "trigger_schedules", "step_execute"]

  members = { for name, account in google_service_account.function : name => "serviceAccount:${account.email}" }
}

resource "google_project_service" "required" {
  for_each = local.required_services

  project            = var.project_id
  service            = each.value
  disable_on_destroy = false
}

resource "google_service_account" "function" {
  for_each = local.functions

  project      = var.project_id
  account_id   = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  display_name = "Convergence ${each.key} function"
  description  = each.value.description

  depends_on = [google_project_service.required]
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "${var.name_prefix}-push"
  display_name = "Convergence Pub/Sub push"
  description  = "OIDC identity of the Pub/Sub push subscriptions; may only invoke the push-target functions."

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket" "sources" {
  # checkov:skip=CKV_GCP_62: holds only content-addressed source archives that Terraform uploads and Cloud Build reads, no tenant data or secrets; usage logs would add a log bucket to own and protect nothing
  project                     = var.project_id
  name                        = "${var.project_id}-${var.name_prefix}-sources"
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = false
  labels                      = var.labels

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 30
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

resource "google_storage_bucket" "claims" {
  # checkov:skip=CKV_GCP_62: holds only short-lived claim records (who holds a key, until when), no tenant data or secrets; usage logs would add a log bucket to own and protect nothing
  # checkov:skip=CKV_GCP_78: a claim is changed only by writes conditioned on its generation; old versions would be dead weight that nothing reads
  project                     = var.project_id
  name                        = local.claims_bucket
  location                    = var.region
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = true
  labels                      = var.labels

  # A claim matters for its lease (minutes) or, once done, for as long as a retry of its request may come
  # (an Idempotency-Key, a redelivered message: days). Older ones are deleted.
  lifecycle_rule {
    condition {
      age = var.claim_retention_days
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

# Every function claims something (onboarding, runs, steps, uploads, schedules, dispatcher ticks).
resource "google_storage_bucket_iam_member" "claims" {
  for_each = local.members

  bucket = google_storage_bucket.claims.name
  role   = "roles/storage.objectUser"
  member = each.value
}

module "kms" {
  source = "./modules/kms"

  project_id       = var.project_id
  location         = coalesce(var.kms_location, var.region)
  key_ring_name    = var.kms_key_ring
  crypto_key_name  = var.kms_crypto_key
  protection_level = var.kms_protection_level
  labels           = var.labels
  encrypters       = { for name in local.kms_encrypters : name => local.members[name] }
  decrypters       = { for name in local.kms_decrypters : name => local.members[name] }

  depends_on = [google_project_service.required]
}

module "bigquery" {
  source = "./modules/bigquery"

  project_id          = var.project_id
  dataset_id          = var.control_dataset
  location            = var.bigquery_location
  labels              = var.labels
  job_users           = local.members
  dataset_creators    = { for name in local.dataset_creators : name => local.members[name] }
  tenant_data_members = { for name in local.tenant_data_members : name => local.members[name] }

  depends_on = [google_project_service.required]
}

module "function" {
  source   = "./modules/function"
  for_each = local.functions

  project_id                       = var.project_id
  region                           = var.region
  name                             = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  description                      = each.value.description
  source_dir                       = "${local.build_dir}/${each.value.source}"
  archive_dir                      = local.build_dir
  source_bucket                    = google_storage_bucket.sources.name
  entry_point                      = each.value.entry_point
  signature_type                   = each.value.signature_type
  service_account_email            = google_service_account.function[each.key].email
  environment                      = local.function_environment[each.key]
  secret_environment               = local.function_secrets[each.key]
  timeout_seconds                  = each.value.timeout_seconds
  ingress_settings                 = local.function_ingress[each.key]
  invoker_members                  = local.function_invokers[each.key]
  available_memory                 = try(var.function_sizing[each.key].available_memory, "512Mi")
  max_instance_count               = try(var.function_sizing[each.key].max_instance_count, 10)
  min_instance_count               = try(var.function_sizing[each.key].min_instance_count, 0)
  max_instance_request_concurrency = try(var.function_sizing[each.key].max_instance_request_concurrency, 1)
  labels                           = var.labels
}

module "pubsub" {
  source = "./modules/pubsub"

  project_id                 = var.project_id
  project_number             = data.google_project.this.number
  steps_topic                = var.steps_topic
  schedules_topic            = var.schedules_topic
  dead_letter_topic          = var.dead_letter_topic
  step_execute_url           = module.function["step_execute"].service_uri
  trigger_schedules_url      = module.function["trigger_schedules"].service_uri
  push_service_account_email = google_service_account.push.email
  push_service_account_name  = google_service_account.push.name
  dead_letter_max_attempts   = var.step_max_attempts
  ack_deadline_seconds       = var.ack_deadline_seconds
  minimum_backoff_seconds    = var.retry_minimum_backoff_seconds
  maximum_backoff_seconds    = var.retry_maximum_backoff_seconds
  steps_publishers           = { for name in local.steps_publishers : name => local.members[name] }
  schedules_publishers       = { for name in local.schedules_publishers : name => local.members[name] }
  labels                     = var.labels

  depends_on = [google_project_service.required]
}

module "scheduler" {
  source = "./modules/scheduler"

  project_id  = var.project_id
  region      = var.region
  name_prefix = var.name_prefix
  topic_id    = module.pubsub.schedules_topic_id
  dispatchers = local.schedules.dispatchers

  depends_on = [google_project_service.required]
}
