"""pyinfra deploy for the fleet benchmark: run component.sh on every host, with the host's
inventory name as its argument (server.script uploads it, then runs it)."""
import os

from pyinfra import host
from pyinfra.operations import server

server.script(
    name="component",
    src=os.path.join(os.path.dirname(os.path.abspath(__file__)), "component.sh"),
    args=(host.name,),
)
