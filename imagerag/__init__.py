"""imagerag: the library behind the function app.

It never imports azure.functions: functions in api/, activities/ and orchestrations/ call
into it, never the other way round.
"""
