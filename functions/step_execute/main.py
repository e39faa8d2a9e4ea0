"""step_execute (CloudEvent): execute one step, publish the next. step_dead_letter: close given-up runs."""

import functions_framework

from common.services.execution import handle_dead_letter_event, handle_step_event


@functions_framework.cloud_event
def step_execute(cloud_event):
    handle_step_event(cloud_event)


@functions_framework.cloud_event
def step_dead_letter(cloud_event):
    handle_dead_letter_event(cloud_event)
