"""Local stand-ins for cloud services that cannot be reached from here.

Each one checks requests against the documented contract (path, api-version, headers,
body) and answers as the service does; none returns canned data without checking.
"""
