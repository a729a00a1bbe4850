// Talking to the service: JSON requests whose errors carry the service's own detail and code.

export class ApiError extends Error {
  constructor(status, detail, code, retryAfter = 0) {
    super(detail);
    Object.assign(this, { status, detail, code, retryAfter });
  }
}

/** GET a JSON resource; an API error becomes an ApiError with the service's detail and code. */
export const getJson = (url, { signal } = {}) => requestJson(url, { signal });

/** Any JSON request (`body` is sent as JSON); errors as for getJson. */
export async function requestJson(url, { method = "GET", body, signal } = {}) {
  let response;
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  try {
    response = await fetch(url, {
      method,
      signal,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, `the service did not answer (${error.message})`, "network_error");
  }
  let answer = null;
  try {
    answer = await response.json();
  } catch {
    // not JSON: keep the status text
  }
  if (!response.ok) {
    let detail = answer?.detail ?? (response.statusText || "request failed");
    if (typeof detail !== "string") detail = JSON.stringify(detail);
    const retryAfter = Number(response.headers.get("Retry-After")) || 0;
    throw new ApiError(response.status, detail, answer?.code ?? `http_${response.status}`, retryAfter);
  }
  return answer;
}
