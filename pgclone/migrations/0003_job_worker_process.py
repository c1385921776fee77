from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("pgclone", "0002_step_worker_hostname"),
    ]

    operations = [
        migrations.AddField(
            model_name="job",
            name="worker_process",
            field=models.CharField(blank=True, max_length=255),
        ),
    ]
