"""step_execute (CloudEvent): execute one step, publish the next. step_dead_letter: close given-up runs."""

import functions_framework

from common import wiring


@functions_framework.cloud_event
def step_execute(cloud_event):
    wiring.step_execute(cloud_event)


@functions_framework.cloud_event
def step_dead_letter(cloud_event):
    wiring.step_dead_letter(cloud_event)
