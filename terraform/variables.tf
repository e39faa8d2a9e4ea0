variable "project_id" {
  type        = string
  description = "Google Cloud project of everything (GCP_PROJECT_ID)."

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id."
  }
}

variable "region" {
  type        = string
  description = "Region of the functions, the source bucket and the scheduler jobs."
  default     = "us-central1"
}

variable "name_prefix" {
  type        = string
  description = "Prefix of functions, service accounts, the bucket and scheduler jobs."
  default     = "convergence"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name_prefix))
    error_message = "name_prefix must be 2-12 lower-case letters, digits or hyphens (service account ids are at most 30 characters)."
  }
}

variable "labels" {
  type        = map(string)
  description = "Labels of every resource that takes labels."
  default     = { app = "convergence" }
}

# -- names the code reads: defaults are common/settings.py's (tests/terraform checks) ----------------

variable "bigquery_location" {
  type        = string
  description = "Location of the control dataset and of tenant datasets (BIGQUERY_LOCATION)."
  default     = "US"
}

variable "control_dataset" {
  type        = string
  description = "Control-plane dataset (CONTROL_DATASET)."
  default     = "organizations"

  validation {
    condition     = can(regex("^[a-z][a-z0-9_]{2,49}$", var.control_dataset))
    error_message = "control_dataset must match ^[a-z][a-z0-9_]{2,49}$."
  }
}

variable "steps_topic" {
  type        = string
  description = "Topic of step messages (STEPS_TOPIC)."
  default     = "convergence-steps"
}

variable "schedules_topic" {
  type        = string
  description = "Topic of scheduled and bulk runs (SCHEDULES_TOPIC)."
  default     = "convergence-schedules"
}

variable "dead_letter_topic" {
  type        = string
  description = "Dead-letter topic of step messages (DEAD_LETTER_TOPIC)."
  default     = "convergence-steps-dlq"
}

variable "step_max_attempts" {
  type        = number
  description = "Deliveries of a step message before it is dead-lettered (STEP_MAX_ATTEMPTS and the subscription's max_delivery_attempts)."
  default     = 5

  validation {
    condition     = var.step_max_attempts >= 5 && var.step_max_attempts <= 100
    error_message = "Pub/Sub allows 5 to 100 delivery attempts."
  }
}

# -- delivery -------------------------------------------------------------------------------------------

variable "ack_deadline_seconds" {
  type        = number
  description = "Ack deadline of the push subscriptions: at least the longest step (540 s), at most Pub/Sub's 600 s."
  default     = 600

  validation {
    condition     = var.ack_deadline_seconds >= 540 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be 540 (the longest step timeout) to 600 (Pub/Sub's maximum)."
  }
}

variable "retry_minimum_backoff_seconds" {
  type        = number
  description = "Shortest wait before Pub/Sub pushes a failed message again."
  default     = 10
}

variable "retry_maximum_backoff_seconds" {
  type        = number
  description = "Longest wait before Pub/Sub pushes a failed message again."
  default     = 600
}

variable "push_target_ingress_settings" {
  type        = string
  description = "Ingress of the push-target functions (trigger_schedules, step_execute)."
  default     = "ALLOW_INTERNAL_ONLY"
}

variable "http_invoker_members" {
  type        = map(string)
  description = "Who may call the HTTPS API functions (onboard, trigger), keyed by a static name; the API authenticates every request with its own keys."
  default     = { public = "allUsers" }
}

variable "function_sizing" {
  type = map(object({
    available_memory                 = optional(string, "512Mi")
    min_instance_count               = optional(number, 0)
    max_instance_count               = optional(number, 10)
    max_instance_request_concurrency = optional(number, 1)
  }))
  description = "Instance sizing by function (onboard, trigger, trigger_schedules, step_execute); a function not named keeps the defaults."
  default     = {}

  validation {
    condition     = length(setsubtract(keys(var.function_sizing), ["onboard", "trigger", "trigger_schedules", "step_execute"])) == 0
    error_message = "function_sizing keys must be onboard, trigger, trigger_schedules or step_execute."
  }
}

# -- keys and secrets -----------------------------------------------------------------------------------

variable "kms_location" {
  type        = string
  description = "Cloud KMS location of the key ring; null uses the region."
  default     = null
}

variable "kms_key_ring" {
  type        = string
  description = "Name of the Cloud KMS key ring."
  default     = "convergence"
}

variable "kms_crypto_key" {
  type        = string
  description = "Name of the key that wraps tenant keysets (the last part of KMS_KEY_NAME)."
  default     = "tenant-keysets"
}

variable "kms_protection_level" {
  type        = string
  description = "SOFTWARE or HSM protection of the key's versions."
  default     = "SOFTWARE"
}

variable "root_api_key_secret" {
  type        = string
  description = "Secret Manager secret (id, same project) holding CA_ROOT_API_KEY; create it and its first version before applying, so the key never enters Terraform state."
  default     = "convergence-root-api-key"
}

variable "root_api_key_secret_version" {
  type        = string
  description = "Version of the root-key secret the onboard function reads (latest, or a number to pin)."
  default     = "latest"
}

variable "smtp" {
  type = object({
    host            = string
    port            = optional(number, 587)
    username        = optional(string, "")
    from            = string
    starttls        = optional(bool, true)
    password_secret = optional(string)
  })
  description = "SMTP server for notify.email steps (SMTP_* settings); password_secret names a Secret Manager secret holding SMTP_PASSWORD. null keeps notifications in the instance's outbox folder only."
  default     = null
}

variable "claim_retention_days" {
  type        = number
  description = "Days a claim object is kept (an Idempotency-Key or redelivered message is recognised this long)."
  default     = 7

  validation {
    condition     = var.claim_retention_days >= 2
    error_message = "claim_retention_days must cover at least a Pub/Sub retention window (2 days or more)."
  }
}
