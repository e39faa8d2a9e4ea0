# The topology declared in common/bus/topology.py, in Google Cloud: three topics and one push subscription each.
#
#   steps topic        --push--> step_execute  (after N deliveries: dead-letter topic)
#   dead-letter topic  --push--> step_execute  (recognises CloudPubSubDeadLetterSourceDeliveryCount)
#   schedules topic    --push--> trigger_schedules
#
# Explicit subscriptions rather than Eventarc triggers: an Eventarc trigger makes its own subscription,
# whose dead-letter policy Terraform cannot set.

locals {
  pubsub_service_agent = "serviceAccount:service-${var.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"
  minimum_backoff      = "${var.minimum_backoff_seconds}s"
  maximum_backoff      = "${var.maximum_backoff_seconds}s"
}

resource "google_pubsub_topic" "steps" {
  # checkov:skip=CKV_GCP_83: messages carry ids only (run, tenant, step index), never secrets; Google-managed encryption
  project = var.project_id
  name    = var.steps_topic
  labels  = var.labels
}

resource "google_pubsub_topic" "schedules" {
  # checkov:skip=CKV_GCP_83: messages carry a template name, tenant ids and run parameters, never secrets; Google-managed encryption
  project = var.project_id
  name    = var.schedules_topic
  labels  = var.labels
}

resource "google_pubsub_topic" "dead_letter" {
  # checkov:skip=CKV_GCP_83: dead-lettered step messages carry ids only, never secrets; Google-managed encryption
  project = var.project_id
  name    = var.dead_letter_topic
  labels  = var.labels
}

resource "google_pubsub_subscription" "steps_push" {
  project                    = var.project_id
  name                       = "${var.steps_topic}-push"
  topic                      = google_pubsub_topic.steps.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  labels                     = var.labels

  push_config {
    push_endpoint = "${var.step_execute_url}/projects/${var.project_id}/topics/${var.steps_topic}"

    oidc_token {
      service_account_email = var.push_service_account_email
      audience              = var.step_execute_url
    }
  }

  retry_policy {
    minimum_backoff = local.minimum_backoff
    maximum_backoff = local.maximum_backoff
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.dead_letter_max_attempts
  }

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "dead_letter_push" {
  project                    = var.project_id
  name                       = "${var.dead_letter_topic}-sub"
  topic                      = google_pubsub_topic.dead_letter.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.message_retention_duration
  labels                     = var.labels

  push_config {
    push_endpoint = "${var.step_execute_url}/projects/${var.project_id}/topics/${var.dead_letter_topic}"

    oidc_token {
      service_account_email = var.push_service_account_email
      audience              = var.step_execute_url
    }
  }

  retry_policy {
    minimum_backoff = local.minimum_backoff
    maximum_backoff = local.maximum_backoff
  }

  expiration_policy {
    ttl = ""
  }
}

resource "google_pubsub_subscription" "schedules_push" {
  project                    = var.project_id
  name                       = "${var.schedules_topic}-push"
  topic                      = google_pubsub_topic.schedules.id
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = var.schedules_message_retention_duration
  labels                     = var.labels

  push_config {
    push_endpoint = "${var.trigger_schedules_url}/projects/${var.project_id}/topics/${var.schedules_topic}"

    oidc_token {
      service_account_email = var.push_service_account_email
      audience              = var.trigger_schedules_url
    }
  }

  retry_policy {
    minimum_backoff = local.minimum_backoff
    maximum_backoff = local.maximum_backoff
  }

  expiration_policy {
    ttl = ""
  }
}

# Dead-lettering is done by the Pub/Sub service agent: it must publish to the dead-letter topic and
# acknowledge on the source subscription.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "steps_dead_letter_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.steps_push.name
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

# Authenticated push: the service agent mints the OIDC token of the push service account (needed on
# projects created before 2021-04-08, harmless on newer ones).
resource "google_service_account_iam_member" "push_token_creator" {
  service_account_id = var.push_service_account_name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

resource "google_pubsub_topic_iam_member" "steps_publisher" {
  for_each = var.steps_publishers

  project = var.project_id
  topic   = google_pubsub_topic.steps.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}

resource "google_pubsub_topic_iam_member" "schedules_publisher" {
  for_each = var.schedules_publishers

  project = var.project_id
  topic   = google_pubsub_topic.schedules.name
  role    = "roles/pubsub.publisher"
  member  = each.value
}
