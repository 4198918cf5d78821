"""The results table: one row per artifact measured on one device (bench or compress).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "results",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("run_dir", sa.Text), sa.Column("run_name", sa.String(200)),
        sa.Column("artifact", sa.String(300), nullable=False), sa.Column("artifact_sha256", sa.String(64)),
        sa.Column("format", sa.String(32)), sa.Column("precision", sa.String(32)), sa.Column("backend", sa.String(32)),
        sa.Column("device", sa.String(300), nullable=False),
        sa.Column("device_profile", sa.String(100)), sa.Column("device_hostname", sa.String(200)),
        sa.Column("device_cpu", sa.String(300)),
        sa.Column("p50_ms", sa.Float), sa.Column("p90_ms", sa.Float), sa.Column("p99_ms", sa.Float),
        sa.Column("mean_ms", sa.Float), sa.Column("throughput_ips", sa.Float), sa.Column("peak_rss_mb", sa.Float),
        sa.Column("energy_mj", sa.Float), sa.Column("accuracy", sa.Float), sa.Column("size_mb", sa.Float),
        sa.Column("edgedl_version", sa.String(32)),
        sa.Column("detail", sa.JSON),
    )
    op.create_index("results_artifact", "results", ["artifact"])
    op.create_index("results_device", "results", ["device"])
    op.create_index("results_run_dir", "results", ["run_dir"])


def downgrade() -> None:
    op.drop_table("results")
