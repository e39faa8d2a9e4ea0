variable "project_id" {
  type        = string
  description = "Project of the topics and subscriptions."
}

variable "project_number" {
  type        = string
  description = "Number of the project, which names its Pub/Sub service agent."
}

variable "steps_topic" {
  type        = string
  description = "Topic of step messages (STEPS_TOPIC); its subscription is <topic>-push."
}

variable "schedules_topic" {
  type        = string
  description = "Topic of scheduled and bulk runs (SCHEDULES_TOPIC); its subscription is <topic>-push."
}

variable "dead_letter_topic" {
  type        = string
  description = "Dead-letter topic of step messages (DEAD_LETTER_TOPIC); its subscription is <topic>-sub."
}

variable "step_execute_url" {
  type        = string
  description = "HTTPS URL of the step_execute function: the steps and dead-letter subscriptions push there."
}

variable "trigger_schedules_url" {
  type        = string
  description = "HTTPS URL of the trigger_schedules function: the schedules subscription pushes there."
}

variable "push_service_account_email" {
  type        = string
  description = "Service account whose OIDC token authenticates every push (it holds run.invoker on the targets)."
}

variable "push_service_account_name" {
  type        = string
  description = "Resource name (projects/P/serviceAccounts/EMAIL) of the push service account."
}

variable "dead_letter_max_attempts" {
  type        = number
  description = "Deliveries of a step message before Pub/Sub forwards it to the dead-letter topic (STEP_MAX_ATTEMPTS)."

  validation {
    condition     = var.dead_letter_max_attempts >= 5 && var.dead_letter_max_attempts <= 100
    error_message = "Pub/Sub allows 5 to 100 delivery attempts."
  }
}

variable "ack_deadline_seconds" {
  type        = number
  description = "Ack deadline of every subscription: a push still running after it is redelivered, so it is at least the longest function timeout."

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "Pub/Sub allows an ack deadline of 10 to 600 seconds."
  }
}

variable "minimum_backoff_seconds" {
  type        = number
  description = "Shortest wait before a failed push is retried."

  validation {
    condition     = var.minimum_backoff_seconds >= 0 && var.minimum_backoff_seconds <= 600
    error_message = "Pub/Sub allows a backoff of 0 to 600 seconds."
  }
}

variable "maximum_backoff_seconds" {
  type        = number
  description = "Longest wait before a failed push is retried."

  validation {
    condition     = var.maximum_backoff_seconds >= 0 && var.maximum_backoff_seconds <= 600
    error_message = "Pub/Sub allows a backoff of 0 to 600 seconds."
  }
}

variable "message_retention_duration" {
  type        = string
  description = "How long the steps and dead-letter subscriptions keep an unacknowledged message."
  default     = "604800s"
}

variable "schedules_message_retention_duration" {
  type        = string
  description = "How long the schedules subscription keeps an unacknowledged message (a scheduled run older than this is stale)."
  default     = "86400s"
}

variable "steps_publishers" {
  type        = map(string)
  description = "Members allowed to publish step messages, keyed by a static name."
  default     = {}
}

variable "schedules_publishers" {
  type        = map(string)
  description = "Members allowed to publish schedules messages besides Cloud Scheduler (e.g. a bulk-run tool), keyed by a static name."
  default     = {}
}

variable "labels" {
  type        = map(string)
  description = "Labels of the topics and subscriptions."
  default     = {}
}
