output "key_ring_id" {
  description = "Resource name of the key ring."
  value       = google_kms_key_ring.this.id
}

output "crypto_key_id" {
  description = "projects/P/locations/L/keyRings/R/cryptoKeys/K: the value of KMS_KEY_NAME."
  value       = google_kms_crypto_key.this.id
}
