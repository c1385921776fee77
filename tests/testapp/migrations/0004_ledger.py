from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("testapp", "0003_reading"),
    ]

    operations = [
        migrations.CreateModel(
            name="Ledger",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("code", models.CharField(max_length=6)),
                ("amount", models.DecimalField(decimal_places=2, max_digits=5)),
                ("memo", models.TextField()),
            ],
            options={
                "db_table": "pgclone_legacy_ledger",
                "managed": False,
            },
        ),
    ]
