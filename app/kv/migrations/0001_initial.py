from django.db import migrations, models

# Versions: timeline << 40 | counter (see kv/consistency.py). The timeline is read from the
# name of the current WAL file, which on a primary uses the insertion timeline: right after a
# promotion it is already the new one.
NEXT_VERSION = r"""
CREATE SEQUENCE kv_version_seq MAXVALUE 1099511627775;
CREATE FUNCTION kv_next_version() RETURNS bigint LANGUAGE sql VOLATILE AS $$
  SELECT (('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::bigint << 40)
         | nextval('kv_version_seq')
$$;
"""

# One round trip per write: consistency level, fail-fast standby check, condition, write.
# Returns r_status in ok | unavailable | not_found | precondition_failed | exists.
KV_WRITE = r"""
CREATE FUNCTION kv_write(p_op text, p_key text, p_value jsonb, p_cond text,
                         p_versions bigint[], p_level text, p_k integer,
                         OUT r_status text, OUT r_version bigint, OUT r_created boolean,
                         OUT r_standbys integer)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
  cur_version bigint;
  cur_deleted boolean;
  present boolean;
BEGIN
  r_created := false;
  IF p_level = 'quorum' THEN
    PERFORM set_config('synchronous_commit', 'remote_apply', true);
    SELECT count(*) INTO r_standbys FROM pg_stat_replication
     WHERE state = 'streaming' AND sync_state IN ('sync', 'quorum');
    IF r_standbys < p_k THEN
      r_status := 'unavailable';
      RETURN;
    END IF;
  ELSE
    PERFORM set_config('synchronous_commit', 'local', true);
  END IF;

  FOR attempt IN 1..3 LOOP
    SELECT t.version, t.deleted INTO cur_version, cur_deleted
      FROM kv_item t WHERE t.key = p_key FOR UPDATE;
    EXIT WHEN FOUND;
    IF p_op = 'delete' THEN
      r_status := CASE WHEN p_cond = 'none' THEN 'not_found' ELSE 'precondition_failed' END;
      RETURN;
    END IF;
    IF p_cond IN ('match', 'match_any') THEN
      r_status := 'precondition_failed';
      RETURN;
    END IF;
    INSERT INTO kv_item AS t (key, value, version, deleted, updated_at)
    VALUES (p_key, p_value, kv_next_version(), false, now())
    ON CONFLICT (key) DO NOTHING
    RETURNING t.version INTO r_version;
    IF FOUND THEN
      r_status := 'ok';
      r_created := true;
      RETURN;
    END IF;
    -- a concurrent writer inserted the key first: lock its row and decide again
  END LOOP;
  IF cur_version IS NULL THEN
    RAISE EXCEPTION 'kv_write: key % kept changing', p_key;
  END IF;

  present := NOT cur_deleted;
  IF (p_cond = 'match' AND NOT (present AND cur_version = ANY (p_versions)))
     OR (p_cond = 'match_any' AND NOT present)
     OR (p_cond = 'none_match' AND present) THEN
    r_status := 'precondition_failed';
    RETURN;
  END IF;
  IF p_cond = 'create' AND present THEN
    r_status := 'exists';
    RETURN;
  END IF;
  IF p_op = 'delete' THEN
    IF NOT present THEN
      r_status := 'not_found';
      RETURN;
    END IF;
    UPDATE kv_item AS t SET value = NULL, deleted = true, version = kv_next_version(),
           updated_at = now()
     WHERE t.key = p_key RETURNING t.version INTO r_version;
  ELSE
    UPDATE kv_item AS t SET value = p_value, deleted = false, version = kv_next_version(),
           updated_at = now()
     WHERE t.key = p_key RETURNING t.version INTO r_version;
    r_created := NOT present;
  END IF;
  r_status := 'ok';
END;
$$;
"""


class Migration(migrations.Migration):
    initial = True
    dependencies: list = []

    operations = [
        migrations.CreateModel(
            name="KVItem",
            fields=[
                ("key", models.TextField(db_collation="C", primary_key=True, serialize=False)),
                ("value", models.JSONField(null=True)),
                ("version", models.BigIntegerField()),
                ("deleted", models.BooleanField(default=False)),
                ("updated_at", models.DateTimeField()),
            ],
            options={"db_table": "kv_item"},
        ),
        migrations.CreateModel(
            name="ApiToken",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False,
                                           verbose_name="ID")),
                ("name", models.CharField(max_length=100, unique=True)),
                ("token_sha256", models.CharField(max_length=64, unique=True)),
                ("scopes", models.CharField(max_length=100)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={"db_table": "kv_api_token"},
        ),
        migrations.RunSQL(
            NEXT_VERSION,
            "DROP FUNCTION kv_next_version(); DROP SEQUENCE kv_version_seq;",
        ),
        migrations.RunSQL(
            KV_WRITE,
            "DROP FUNCTION kv_write(text, text, jsonb, text, bigint[], text, integer);",
        ),
    ]
