# The workshop software's virtual environment first on PATH, for login and interactive
# shells of the desktop (Docker's ENV does not reach sessions started by a login).
case ":${PATH}:" in
  *":/home/client/.venv/bin:"*) ;;
  *) PATH="/home/client/.venv/bin:${PATH}" ;;
esac
export PATH
