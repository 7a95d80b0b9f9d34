#!/usr/bin/env bash
# The Redis login of a cartpulse stack, kept out of Terraform.
#
# The replication group authenticates with ElastiCache RBAC (redis.tf): its user
# group holds a switched-off "default" user (Terraform's) and the application
# user this script creates. The application user's password is generated here
# (Secrets Manager's GetRandomPassword), set on the user and written into the
# redis-url secret as rediss://USER:PASSWORD@CONFIGURATION-ENDPOINT:6379, which
# ECS injects as CARTPULSE_REDIS_URL. The replication group runs in cluster
# mode: the service reaches every shard through the configuration endpoint
# (its cluster client reads the slot map there), so the URL names no node.
# Terraform never reads or writes the password, so it is in neither plan nor
# state, and rotating it needs no Terraform run.
#
#   ./redis-credentials.sh create   once per stack, after the Redis part exists
#                                   (README.md): create the user with a new
#                                   password, add it to the user group, write
#                                   the secret
#   ./redis-credentials.sh rotate   new password: the user accepts the old and
#                                   the new one, the secret gets the new one,
#                                   every service is redeployed and waited for,
#                                   then only the new one is accepted
#   ./redis-credentials.sh finish   accept only the password in the secret (after
#                                   a rotate that stopped before its end)
#   ./redis-credentials.sh acl      apply the access string of redis.tf again
#
# Run it from any directory, after `terraform init` of this stack (it reads
# `terraform output`), with AWS credentials allowed to manage ElastiCache users
# and user groups, write the redis-url secret (and use its KMS key) and update
# the ECS services. Passwords never appear on a command line: they reach the
# AWS CLI through files in a private temporary directory removed on exit.
set -euo pipefail
cd "$(dirname "$0")"

die() {
    echo "redis-credentials: $*" >&2
    exit 1
}
say() { echo "== redis-credentials: $*"; }

for tool in aws terraform jq; do
    command -v "$tool" >/dev/null || die "needs $tool on PATH"
done

out() { terraform output -raw "$1"; }

user_id=$(out redis_app_user_id)
user_name=$(out redis_app_user_name)
access_string=$(out redis_app_access_string)
group_id=$(out redis_user_group_id)
# Empty (or absent) until the replication group runs in cluster mode; only
# create and rotate (which write the URL) need it, so acl and finish work
# without it.
host=$(out redis_configuration_endpoint 2>/dev/null || true)
secret=$(out redis_url_secret_arn)
# The stack's region, from the secret's ARN (arn:PARTITION:secretsmanager:REGION:…).
region=$(cut -d: -f4 <<<"$secret")
[[ -n $region ]] || die "cannot tell the region from $secret"
export AWS_REGION=$region AWS_DEFAULT_REGION=$region

# Values spliced into JSON below must not need escaping.
[[ $user_id =~ ^[A-Za-z][A-Za-z0-9-]*$ ]] || die "unexpected user id $user_id"
[[ $user_name =~ ^[A-Za-z0-9_.-]+$ ]] || die "unexpected user name $user_name"
[[ $access_string != *[\"\\]* ]] || die "the access string must not hold quotes or backslashes"

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# 64 letters and digits: no character that would need escaping in a URL.
new_password() {
    local pw
    pw=$(aws secretsmanager get-random-password --password-length 64 \
        --exclude-punctuation --require-each-included-type \
        --query RandomPassword --output text)
    [[ $pw =~ ^[A-Za-z0-9]{64}$ ]] || die "GetRandomPassword returned an unexpected value"
    printf '%s' "$pw"
}

# The password in the secret's current URL.
current_password() {
    local url
    url=$(aws secretsmanager get-secret-value --secret-id "$secret" \
        --query SecretString --output text) || die "cannot read $secret (run create first?)"
    [[ $url =~ ^rediss://[^:@/]+:([A-Za-z0-9]+)@ ]] || die "$secret does not hold a rediss://USER:PASSWORD@HOST URL"
    printf '%s' "${BASH_REMATCH[1]}"
}

user_exists() {
    aws elasticache describe-users --user-id "$user_id" >/dev/null 2>&1
}

# Waits until `aws elasticache $1 … --query $2` reports "active" (10 minutes at most).
wait_active() {
    local what=$1 status i
    shift
    for ((i = 0; i < 60; i++)); do
        status=$(aws elasticache "$@" --output text)
        [[ $status == active ]] && return 0
        sleep 10
    done
    die "$what still $status after 10 minutes"
}
wait_user() { wait_active "user $user_id" describe-users --user-id "$user_id" --query 'Users[0].Status'; }
wait_group() { wait_active "user group $group_id" describe-user-groups --user-group-id "$group_id" --query 'UserGroups[0].Status'; }

# set_passwords PW [PW2]: the passwords the user accepts from now on (at most two).
set_passwords() {
    local list
    list=$(printf '"%s",' "$@")
    printf '{"UserId":"%s","AuthenticationMode":{"Type":"password","Passwords":[%s]}}' \
        "$user_id" "${list%,}" >"$work/modify-user.json"
    aws elasticache modify-user --cli-input-json "file://$work/modify-user.json" >/dev/null
    wait_user
}

# Checked before create or rotate changes anything.
need_host() {
    [[ $host =~ ^[A-Za-z0-9.-]+$ ]] ||
        die "no Redis configuration endpoint in \`terraform output redis_configuration_endpoint\` (cluster mode not enabled yet, or the state not refreshed since: terraform apply -refresh-only)"
}

write_secret() {
    need_host
    printf 'rediss://%s:%s@%s:6379' "$user_name" "$1" "$host" >"$work/url"
    aws secretsmanager put-secret-value --secret-id "$secret" \
        --secret-string "file://$work/url" --query VersionId --output text >/dev/null
}

redeploy() {
    local cluster services s
    cluster=$(out ecs_cluster_name)
    mapfile -t services < <(
        out gateway_service_name
        echo
        out processor_service_name
        echo
    )
    for s in "${services[@]}"; do
        [[ -n $s ]] || continue
        say "redeploying $s"
        aws ecs update-service --cluster "$cluster" --service "$s" --force-new-deployment >/dev/null
    done
    for s in "${services[@]}"; do
        [[ -n $s ]] || continue
        say "waiting for $s to be stable"
        aws ecs wait services-stable --cluster "$cluster" --services "$s" ||
            die "$s is not stable yet; both passwords stay valid. Once every service runs new tasks: $0 finish"
    done
}

case "${1:-}" in
create)
    user_exists && die "user $user_id exists already; use: $0 rotate"
    need_host
    pw=$(new_password)
    say "creating user $user_id ($user_name)"
    printf '{"UserId":"%s","UserName":"%s","Engine":"redis","AccessString":"%s","AuthenticationMode":{"Type":"password","Passwords":["%s"]}}' \
        "$user_id" "$user_name" "$access_string" "$pw" >"$work/create-user.json"
    aws elasticache create-user --cli-input-json "file://$work/create-user.json" >/dev/null
    wait_user
    say "adding it to user group $group_id"
    aws elasticache modify-user-group --user-group-id "$group_id" --user-ids-to-add "$user_id" >/dev/null
    wait_group
    say "writing the redis-url secret"
    write_secret "$pw"
    say "done; tasks started from now on log in as $user_name"
    ;;
rotate)
    user_exists || die "user $user_id does not exist; use: $0 create"
    need_host
    old=$(current_password)
    new=$(new_password)
    say "user $user_id accepts the old and a new password"
    set_passwords "$old" "$new"
    say "writing the new password into the redis-url secret"
    write_secret "$new"
    redeploy
    say "dropping the old password"
    set_passwords "$new"
    say "done"
    ;;
finish)
    user_exists || die "user $user_id does not exist; use: $0 create"
    pw=$(current_password)
    say "user $user_id accepts only the password in the secret"
    set_passwords "$pw"
    say "done"
    ;;
acl)
    user_exists || die "user $user_id does not exist; use: $0 create"
    say "access string of $user_id: $access_string"
    aws elasticache modify-user --user-id "$user_id" --access-string "$access_string" >/dev/null
    wait_user
    say "done"
    ;;
*)
    sed -n '/^#   \.\/redis-credentials\.sh create/,/^#$/{/^#$/!p}' "$0" >&2
    exit 2
    ;;
esac
