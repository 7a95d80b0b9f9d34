# What the tasks get from Secrets Manager (ECS injects the values at task
# start; they never appear in the task definition, the image or the logs):
#   CARTPULSE_DATABASE_URL ← database_url: postgres://USER@HOST:5432/DB?sslmode=require,
#                            with no password in it;
#   PGPASSWORD             ← the "password" key of the RDS-managed master secret
#                            (sqlx, under sea-orm, takes the password from PGPASSWORD
#                            when the URL has none), so the password is never in
#                            Terraform state;
#   CARTPULSE_REDIS_URL    ← redis_url: rediss://:AUTH_TOKEN@PRIMARY:6379.

resource "aws_secretsmanager_secret" "database_url" {
  #checkov:skip=CKV2_AWS_57:Holds no credential (user, host and database only); the password is the RDS-managed master secret, which RDS rotates.
  name                    = "${local.name}/database-url"
  description             = "cartpulse CARTPULSE_DATABASE_URL (no password; PGPASSWORD comes from the RDS master secret)"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "database_url" {
  secret_id     = aws_secretsmanager_secret.database_url.id
  secret_string = "postgres://${var.db_username}@${aws_db_instance.main.address}:${aws_db_instance.main.port}/${var.db_name}?sslmode=require"
}

resource "aws_secretsmanager_secret" "redis_url" {
  #checkov:skip=CKV2_AWS_57:An ElastiCache AUTH token is rotated with modify-replication-group (ROTATE, then SET) and a redeploy, not by a Secrets Manager rotation function; terraform/README.md has the procedure.
  name                    = "${local.name}/redis-url"
  description             = "cartpulse CARTPULSE_REDIS_URL (rediss:// with the ElastiCache AUTH token)"
  kms_key_id              = aws_kms_key.secrets.arn
  recovery_window_in_days = 7
}

resource "aws_secretsmanager_secret_version" "redis_url" {
  secret_id     = aws_secretsmanager_secret.redis_url.id
  secret_string = "rediss://:${random_password.redis_auth.result}@${aws_elasticache_replication_group.main.primary_endpoint_address}:6379"
}

locals {
  rds_master_secret_arn = aws_db_instance.main.master_user_secret[0].secret_arn

  task_secrets = [
    { name = "CARTPULSE_DATABASE_URL", valueFrom = aws_secretsmanager_secret.database_url.arn },
    { name = "PGPASSWORD", valueFrom = "${local.rds_master_secret_arn}:password::" },
    { name = "CARTPULSE_REDIS_URL", valueFrom = aws_secretsmanager_secret.redis_url.arn },
  ]
}
